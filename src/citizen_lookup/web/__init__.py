"""HTTP blueprints: webhooks for providers, health and metrics for operators."""
