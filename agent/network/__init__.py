"""Network: emulated WAN links for local swarms, and link monitoring in every agent."""
