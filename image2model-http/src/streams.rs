//! Open long-lived event streams per key, bounded
//! (`MAX_EVENT_STREAMS_PER_KEY`): what `GET /api/v1/events` takes a slot
//! of. Kept apart from the route so the shared state can hold it without
//! importing the API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use image2model_core::domain::ApiKeyId;

/// Open event streams per key, in this process, bounded.
#[derive(Debug)]
pub struct StreamSlots {
    max: usize,
    open: Mutex<HashMap<ApiKeyId, usize>>,
}

/// One open stream's slot: given back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    key: ApiKeyId,
}

impl StreamSlots {
    /// At most `max` streams per key (at least 1).
    #[must_use]
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `key`, or `None` when it has `max` streams open.
    #[must_use]
    pub fn take(self: &Arc<Self>, key: &ApiKeyId) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            slots: self.clone(),
            key: key.clone(),
        })
    }

    /// Streams open for `key`.
    #[must_use]
    pub fn open(&self, key: &ApiKeyId) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(key).copied().unwrap_or(0)
    }

    /// Streams open for every key.
    #[must_use]
    pub fn total(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.values().sum()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}
