"""The session layer: REPL sessions (events, checkpoint states, LLM receipts)
stored as streams and blobs of the log, saved in the background."""
