// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {IMarketplace} from "./IMarketplace.sol";

/// @title IPaymentChannels — metered, per-call access to an asset
/// @notice A payer deposits for one asset and names two keys: the `signer` signs EIP-712 ceiling
/// vouchers `Voucher(channelId, maxClaimableAmount)`; the `receiverAuthorizer` (the gateway's
/// settlement key) claims what was served, up to the ceiling and the deposit, into the asset's
/// vault. `payment` is the one view other contracts rely on (the ReputationRegistry reads it to
/// qualify a rater). Amounts are in the channel token's base units; times in unix seconds.
interface IPaymentChannels {
    /// @notice One channel, packed into five slots.
    struct Channel {
        address payer;
        uint64 expiry;
        bool settled;
        address signer;
        uint96 assetId;
        address receiverAuthorizer;
        address token;
        uint128 deposit;
        uint128 claimed;
    }

    // ---------------------------------------------------------------- errors

    /// @notice No channel has id `channelId`.
    /// @param channelId The id asked for.
    error UnknownChannel(uint256 channelId);
    /// @notice Only the channel's payer may do this.
    /// @param channelId The channel.
    /// @param caller Who tried.
    error NotPayer(uint256 channelId, address caller);
    /// @notice Only the owner of the asset a channel pays for may close the channel early.
    /// @param channelId The channel.
    /// @param caller Who tried.
    error NotChannelAssetOwner(uint256 channelId, address caller);
    /// @notice Only the channel's receiver authorizer may claim.
    /// @param channelId The channel.
    /// @param caller Who tried.
    error NotReceiverAuthorizer(uint256 channelId, address caller);
    /// @notice The channel was already settled (reclaimed, or settled by the receiver).
    /// @param channelId The channel.
    error AlreadySettled(uint256 channelId);
    /// @notice The channel expired (or was closed) at `expiry`; it can no longer be topped up, extended or closed.
    /// @param channelId The channel.
    /// @param expiry When it expired.
    error ChannelExpired(uint256 channelId, uint256 expiry);
    /// @notice Claims ended at `claimDeadline` (expiry plus the claim window); only reclaim is possible.
    /// @param channelId The channel.
    /// @param claimDeadline When claims ended.
    error ClaimWindowOver(uint256 channelId, uint256 claimDeadline);
    /// @notice The unclaimed deposit can be reclaimed only from `reclaimableAt` (expiry plus the claim window).
    /// @param channelId The channel.
    /// @param reclaimableAt When reclaim becomes possible.
    error ReclaimTooEarly(uint256 channelId, uint256 reclaimableAt);
    /// @notice An expiry must lie in the future (and after the current one, to extend).
    /// @param expiry The expiry given.
    /// @param notAfter The time it must be after (now, or the current expiry).
    error InvalidExpiry(uint256 expiry, uint256 notAfter);
    /// @notice A channel's token must be the asset's token.
    /// @param assetId The asset.
    /// @param expected The asset's token.
    /// @param given The token given.
    error TokenMismatch(uint256 assetId, address expected, address given);
    /// @notice Deposits and top-ups must be positive and fit in 128 bits.
    /// @param amount The amount given.
    error InvalidAmount(uint256 amount);
    /// @notice The channel's signer cannot be the zero address.
    error ZeroSigner();
    /// @notice The channel's receiver authorizer cannot be the zero address.
    error ZeroReceiverAuthorizer();
    /// @notice A claim must raise the total already claimed.
    /// @param channelId The channel.
    /// @param claimed What was claimed so far.
    /// @param totalClaimed The total asked for.
    error ClaimNotIncreasing(uint256 channelId, uint256 claimed, uint256 totalClaimed);
    /// @notice A claim cannot exceed the voucher's ceiling.
    /// @param channelId The channel.
    /// @param totalClaimed The total asked for.
    /// @param maxClaimableAmount The voucher's ceiling.
    error ClaimAboveVoucher(uint256 channelId, uint256 totalClaimed, uint256 maxClaimableAmount);
    /// @notice A claim cannot exceed the deposit.
    /// @param channelId The channel.
    /// @param totalClaimed The total asked for.
    /// @param deposit The channel's deposit.
    error ClaimExceedsDeposit(uint256 channelId, uint256 totalClaimed, uint256 deposit);
    /// @notice The voucher was not signed by the channel's signer (ECDSA) for this channel, ceiling,
    /// chain and contract.
    /// @param channelId The channel.
    /// @param recovered The address the signature recovers to (zero if none).
    error InvalidVoucherSignature(uint256 channelId, address recovered);

    // ---------------------------------------------------------------- events

    /// @notice A channel was opened.
    /// @param channelId The new channel's id.
    /// @param assetId The asset it pays for.
    /// @param payer Who deposited.
    /// @param token The asset's token.
    /// @param deposit What was deposited.
    /// @param expiry When service ends.
    /// @param signer The key that signs vouchers.
    /// @param receiverAuthorizer The key that alone may claim.
    event ChannelOpened(
        uint256 indexed channelId,
        uint256 indexed assetId,
        address indexed payer,
        address token,
        uint256 deposit,
        uint64 expiry,
        address signer,
        address receiverAuthorizer
    );
    /// @notice The payer added `amount`; the deposit is now `deposit`.
    /// @param channelId The channel.
    /// @param payer The payer.
    /// @param amount What was added.
    /// @param deposit The deposit now.
    event ChannelToppedUp(uint256 indexed channelId, address indexed payer, uint256 amount, uint256 deposit);
    /// @notice The payer moved the expiry later.
    /// @param channelId The channel.
    /// @param payer The payer.
    /// @param expiry The new expiry.
    event ChannelExtended(uint256 indexed channelId, address indexed payer, uint64 expiry);
    /// @notice The receiver claimed: `amount` went to the asset's vault; `totalClaimed` is now claimed in total.
    /// @param channelId The channel.
    /// @param assetId The asset paid for.
    /// @param receiverAuthorizer Who claimed.
    /// @param amount What this claim paid into the vault.
    /// @param totalClaimed What the channel has paid in total.
    event ChannelClaimed(
        uint256 indexed channelId,
        uint256 indexed assetId,
        address indexed receiverAuthorizer,
        uint256 amount,
        uint256 totalClaimed
    );
    /// @notice The asset's owner ended service: the channel now expires at `expiry` (claims stay open
    /// for the claim window).
    /// @param channelId The channel.
    /// @param owner The asset's owner.
    /// @param expiry The new expiry (the close's block time).
    event ChannelClosed(uint256 indexed channelId, address indexed owner, uint64 expiry);
    /// @notice The channel ended; `refunded` went back to the payer.
    /// @param channelId The channel.
    /// @param caller Who settled it.
    /// @param claimed What the channel paid into the vault in total.
    /// @param refunded What went back to the payer.
    event ChannelSettled(uint256 indexed channelId, address indexed caller, uint256 claimed, uint256 refunded);

    // ---------------------------------------------------------------- external

    /// @notice Opens a channel for `assetId`, pulling `deposit` of `token` from the caller.
    /// @param assetId The asset the channel pays for.
    /// @param token The asset's token.
    /// @param deposit What to deposit (positive, < 2^128).
    /// @param expiry When service ends (in the future).
    /// @param signer The key that signs vouchers (possibly a session key).
    /// @param receiverAuthorizer The gateway's settlement key, which alone may claim.
    /// @return channelId The new channel's id.
    function open(
        uint256 assetId,
        address token,
        uint256 deposit,
        uint64 expiry,
        address signer,
        address receiverAuthorizer
    ) external returns (uint256 channelId);

    /// @notice Adds `amount` to the deposit (payer only, before expiry).
    /// @param channelId The channel.
    /// @param amount What to add (positive; the deposit stays < 2^128).
    function topUp(uint256 channelId, uint256 amount) external;

    /// @notice Moves the expiry later (payer only, before expiry).
    /// @param channelId The channel.
    /// @param newExpiry The new expiry (after the current one).
    function extend(uint256 channelId, uint64 newExpiry) external;

    /// @notice The receiver authorizer claims `totalClaimed` in total (the calls it served), under a
    /// voucher with ceiling `maxClaimableAmount` signed by the channel's signer; the increase over
    /// what was claimed goes into the asset's vault. Allowed until expiry plus the claim window.
    /// @param channelId The channel.
    /// @param maxClaimableAmount The voucher's ceiling.
    /// @param totalClaimed The cumulative total to claim.
    /// @param signature The signer's 65-byte ECDSA signature of the voucher.
    function claim(uint256 channelId, uint128 maxClaimableAmount, uint128 totalClaimed, bytes calldata signature)
        external;

    /// @notice The receiver authorizer's final claim (skipped when `totalClaimed` adds nothing) and,
    /// in the same transaction, the unclaimed rest back to the payer: the channel is settled.
    /// @param channelId The channel.
    /// @param maxClaimableAmount The voucher's ceiling.
    /// @param totalClaimed The cumulative total to claim.
    /// @param signature The signer's 65-byte ECDSA signature of the voucher.
    function claimAndSettle(
        uint256 channelId,
        uint128 maxClaimableAmount,
        uint128 totalClaimed,
        bytes calldata signature
    ) external;

    /// @notice The asset's owner ends service now: the expiry becomes the current time. The receiver
    /// may still claim the calls it answered during the claim window; then the payer reclaims the rest.
    /// @param channelId The channel.
    function close(uint256 channelId) external;

    /// @notice After expiry plus the claim window, returns the unclaimed deposit to the payer (callable by anyone).
    /// @param channelId The channel.
    function reclaim(uint256 channelId) external;

    // ---------------------------------------------------------------- views

    /// @notice A channel's state. Reverts UnknownChannel.
    /// @param channelId The channel.
    /// @return The channel.
    function getChannel(uint256 channelId) external view returns (Channel memory);

    /// @notice Who pays through a channel, for which asset, and how much of it was claimed into the
    /// asset's vault so far (base units of the channel's token). Reverts UnknownChannel.
    /// @param channelId The channel.
    /// @return payer Who opened it.
    /// @return assetId The asset it pays for.
    /// @return claimed What its claims paid into the asset's vault.
    function payment(uint256 channelId) external view returns (address payer, uint256 assetId, uint256 claimed);

    /// @notice The EIP-712 digest of a voucher, as the signer signs it.
    /// @param channelId The channel.
    /// @param maxClaimableAmount The voucher's ceiling.
    /// @return The digest.
    function voucherDigest(uint256 channelId, uint128 maxClaimableAmount) external view returns (bytes32);

    /// @notice How long after expiry the receiver may still claim (x402's minimum withdraw delay).
    /// @return Seconds (15 minutes).
    function CLAIM_WINDOW() external view returns (uint256);

    /// @notice The marketplace whose assets channels pay for.
    /// @return The Marketplace.
    function marketplace() external view returns (IMarketplace);

    /// @notice Number of channels opened; ids run from 1.
    /// @return The count.
    function channelCount() external view returns (uint256);
}
