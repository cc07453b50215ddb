"""The local HTTP API (routers over the engines) and the staff web console served beside it."""
