-- Indexes for the retention jobs (control-plane/src/retention.rs), which
-- delete by age: without them each hourly run would scan its whole table.
-- A workspace's newest change is kept (for `nodes propagation`), so the
-- change log is also searched by workspace.
CREATE INDEX change_log_workspace ON change_log (workspace_id, revision);
CREATE INDEX usage_minute ON usage (minute);
CREATE INDEX notifications_created ON notifications (created_at) WHERE status <> 'pending';
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
CREATE INDEX environment_access_expiry ON environment_access (expires_at);
