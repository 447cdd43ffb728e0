"""The offline demo: a toy corpus of four answer styles (corpus.py), a small chat model trained
from scratch on it (model.py: `chatbot up --demo`, the fast experiment), and a tiny untrained
model for tests (tiny.py). It builds on training/; the product's own code never imports it."""
