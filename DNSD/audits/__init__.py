"""Checking a run made elsewhere: its files against its chain of custody, its positions re-trained and judged, the
numbers it reports recomputed, and what the audit covered said (dnsd audit)."""
