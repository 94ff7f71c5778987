// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

/// @title What a channel has paid, and for what
/// @notice The one view of a payment channel that other contracts rely on (the ReputationRegistry
/// reads it to qualify a rater), so that they do not depend on how channels are implemented.
interface IChannelPayments {
    /// @notice Who opened `channelId`, the asset it pays for, and how much of it has been claimed
    /// into that asset's vault so far (token base units). Reverts for an unknown channel.
    function payment(uint256 channelId) external view returns (address payer, uint256 assetId, uint256 claimed);
}
