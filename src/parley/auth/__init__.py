"""JWT verification and issuing; keys and clock come from outside."""
