"""Payment provider plugins: sandbox (offline, default), GoCardless Instant Bank Pay, Stripe Checkout."""
