"""ui: one module per tab of the Gradio app; widgets and wiring only."""
