"""sleeve_inference."""
