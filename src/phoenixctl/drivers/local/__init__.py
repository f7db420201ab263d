"""The local provider: images and servers as processes on this machine, HAProxy as the load balancer."""
