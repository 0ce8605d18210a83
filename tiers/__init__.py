"""The five-tier tree: node codes, jurisdiction checks, and (later) the upward bridge."""
