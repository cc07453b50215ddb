"""One router per resource of the local API; agent.api.app includes them all."""
