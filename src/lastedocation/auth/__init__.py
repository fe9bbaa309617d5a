"""Accounts: users and roles, passwords (argon2id), access/refresh/API tokens,
the first-start set-up link and the login rate limit."""
