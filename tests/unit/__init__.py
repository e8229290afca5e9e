"""Pure logic: no store, no server, no process. Each test runs in milliseconds."""
