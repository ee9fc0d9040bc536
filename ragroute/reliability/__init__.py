"""Reliability harnesses: kill points, corruption, concurrent readers, CLI fault injection and fuzzing."""
