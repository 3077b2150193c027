"""Submissions, one folder each (`torch.py`, `search_space.json`, README.md), found by folder name."""
