"""Turn sources into line-art/colour pairs in the one on-disk format colorizer reads (see common.py)."""
