"""capnas.sandbox: how untrusted code runs. Isolation tiers, limits, launcher, in-sandbox harness."""
