"""The OpenStack provider, through openstacksdk: Nova, Glance, Neutron, Octavia, Designate."""
