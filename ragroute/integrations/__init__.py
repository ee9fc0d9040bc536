"""Adapters to RAG frameworks (LlamaIndex first)."""
