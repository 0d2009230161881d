"""sleeve_common."""
