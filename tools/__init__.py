"""hearth.tools"""
