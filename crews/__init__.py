"""Crews: the supervisor that routes events and the specialist workflows."""
