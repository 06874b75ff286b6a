"""One module per OpenAI resource, plus the base handler every one of them derives from."""
