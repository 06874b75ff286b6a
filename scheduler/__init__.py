"""hearth.scheduler"""
