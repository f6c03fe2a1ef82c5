"""Thin HTTP handlers: route, logs, dlq, health."""
