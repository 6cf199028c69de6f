"""Federated corpora: users, token streams and their train/val/test splits (numpy only)."""
