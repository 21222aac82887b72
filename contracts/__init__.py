"""capnas.contracts: what a valid model is. Contract data, static checks, the dynamic probe, violation codes."""
