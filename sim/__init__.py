"""Simulated users: a client that talks to the running app as a browser does, rater policies, and
the experiment that shows whether the feedback loop really improves approval."""
