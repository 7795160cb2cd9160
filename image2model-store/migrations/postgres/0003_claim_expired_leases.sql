-- Claiming a running item whose lease expired (a crashed worker's) reads
-- only the expired ones, however many items are in flight.
CREATE INDEX items_status_lease ON items (status, lease_expires_at_ms);
