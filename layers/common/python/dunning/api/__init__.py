"""The public REST API (Powertools resolver, pydantic contracts, role checks)."""
