"""One module per question asked of a trained model (pure tensor math and tables)."""
