"""hearth.api"""
