//! A bounded reader of server-sent events, for fal's status stream.
//!
//! fal's `…/status/stream` sends each status object as one `data:` event and
//! a keep-alive comment every 15 s. This reader splits the byte stream into
//! events' data and refuses a line or an event larger than its bound, so a
//! misbehaving upstream cannot grow our memory (a general SSE crate such as
//! `eventsource-stream` has no such bound).

/// The longest line accepted.
pub const MAX_LINE: usize = 256 * 1024;
/// The longest event (its data lines joined) accepted.
pub const MAX_EVENT: usize = 1024 * 1024;

/// A line or an event over the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a status stream event is larger than {MAX_EVENT} bytes")]
pub struct TooLarge;

/// Splits SSE bytes into the data of each event.
#[derive(Debug, Default)]
pub struct SseReader {
    /// Bytes of the line being read.
    line: Vec<u8>,
    /// Data lines of the event being read, joined by `\n`.
    data: String,
    /// Whether the event being read has a data field yet.
    has_data: bool,
}

impl SseReader {
    /// Feeds a chunk; returns the data of each event it completed (each at
    /// most [`MAX_EVENT`] bytes).
    ///
    /// # Errors
    /// [`TooLarge`] once a line passes [`MAX_LINE`] or an event
    /// [`MAX_EVENT`]; the reader is not meant to be used after that.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, TooLarge> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            if self.line.len() + pos > MAX_LINE {
                return Err(TooLarge);
            }
            self.line.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line_done(&line, &mut events)?;
            // Keep the allocation for the next line.
            line.clear();
            self.line = line;
        }
        if self.line.len() + rest.len() > MAX_LINE {
            return Err(TooLarge);
        }
        self.line.extend_from_slice(rest);
        Ok(events)
    }

    fn line_done(&mut self, line: &[u8], events: &mut Vec<String>) -> Result<(), TooLarge> {
        if line.is_empty() {
            if self.has_data {
                events.push(std::mem::take(&mut self.data));
                self.has_data = false;
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // a comment: keep-alive
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        if field == b"data" {
            // Measured once decoded: each invalid byte becomes a three-byte
            // U+FFFD, so the raw length would let an event grow past the bound.
            let value = String::from_utf8_lossy(value);
            if self.data.len() + value.len() + 1 > MAX_EVENT {
                return Err(TooLarge);
            }
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(&value);
            self.has_data = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_comments_are_skipped() {
        let mut r = SseReader::default();
        assert!(r.push(b": keep-alive\n\nda").unwrap().is_empty());
        assert!(r.push(b"ta: {\"a\":1}\r").unwrap().is_empty());
        assert_eq!(r.push(b"\n\n").unwrap(), vec![r#"{"a":1}"#.to_owned()]);
        let got = r
            .push(b"event: x\ndata: one\ndata: two\nid: 3\n\ndata:three\n\n")
            .unwrap();
        assert_eq!(got, vec!["one\ntwo".to_owned(), "three".to_owned()]);
    }

    #[test]
    fn an_event_without_data_is_no_event() {
        let mut r = SseReader::default();
        assert!(r.push(b"event: ping\n\n\n").unwrap().is_empty());
    }

    #[test]
    fn endless_lines_and_events_are_refused() {
        let mut r = SseReader::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut refused = false;
        for _ in 0..8 {
            if r.push(&chunk).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "a line without end is refused");

        let mut r = SseReader::default();
        let line = format!("data: {}\n", "y".repeat(200 * 1024));
        let mut refused = false;
        for _ in 0..8 {
            if r.push(line.as_bytes()).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused, "an event without end is refused");
    }
}
