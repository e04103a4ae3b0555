"""georelay-edge: runtime levers of the edge rules (deploy versions, the AWS ip-ranges map)."""
