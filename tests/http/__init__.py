"""The app answering through Flask's test client, over a real store, in the test's process."""
