"""The core every layer may use: errors, the money model, the retry policy and secret scrubbing.

It imports nothing else of ours, so any module can depend on it without a cycle.
"""
