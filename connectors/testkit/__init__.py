"""Contract test kits every connector and provider runs (in the spirit of singer-sdk's standard tests)."""
