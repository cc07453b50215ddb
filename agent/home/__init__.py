"""An agent home: its settings file, secrets, logs, per-account settings writer and the demo firm."""
