"""Plumbing shared by every role's command line: console, user errors, config from flags."""
