"""The held-out covert-action set: scenario files, validation, hashing and the frozen manifest."""
