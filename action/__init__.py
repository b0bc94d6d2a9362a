"""The GitHub Action's script (action.yml runs portctl_action.py from the action's checkout)."""
