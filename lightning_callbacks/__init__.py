"""Lightning integration for met3r-metrics (the core library never imports Lightning)."""
