"""hybridroute operator: reconciles InferenceEndpoints and RoutingPolicies (hybridroute.io/v1alpha1)."""
