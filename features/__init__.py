"""Pure Polars window transforms over events: volume bursts, prompt patterns, account clusters.

Nothing here reads files, Kafka or the clock: every function maps frames to frames.
"""
