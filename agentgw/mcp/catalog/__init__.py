"""What the endpoints list: exposed names and virtual servers (naming.py), the merged listings (catalog.py), and
pinned tool definitions with their injection scan (pinning.py, pinops.py, scan.py)."""
