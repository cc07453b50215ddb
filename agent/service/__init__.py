"""The agent as a long-running service: the job loop, hot reload of its configuration, and its installers."""
