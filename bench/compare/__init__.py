"""Helpers of bench/compare_servers.py: throwaway venvs and the competitors' server files."""
