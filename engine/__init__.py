"""hearth.engine"""
