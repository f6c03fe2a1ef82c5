"""The fault suite: inject each fault against real processes, then check the whole history."""
