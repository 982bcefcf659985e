"""Shared inputs computed once per audit and handed to every detector."""
