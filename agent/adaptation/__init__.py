"""Adaptation: pure decisions (groups, local work, timeouts, who averages) drawn from measurements."""
