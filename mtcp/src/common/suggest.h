// "Did you mean" for configuration keys: the known name closest to a misspelt one.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace mtcp {

// Edit distance (insertions, deletions, substitutions; each costs 1).
size_t edit_distance(std::string_view a, std::string_view b);

// The closest of `known` to `name` when it is close enough to be a plausible typo (at most a
// third of the name's length, and at most 3 edits), else empty.
std::string closest_name(std::string_view name, const std::vector<std::string>& known);

// " (did you mean \"x\"?)" or "", for appending to an error message.
std::string did_you_mean(std::string_view name, const std::vector<std::string>& known);

}  // namespace mtcp
