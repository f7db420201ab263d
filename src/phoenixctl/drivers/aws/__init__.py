"""The AWS provider: EC2 instances from AMIs, ELBv2 or Elastic IPs in front, Route 53 names."""
